package gateway

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/fieldgate/fieldgate/broker"
	"github.com/fieldgate/fieldgate/devices"
)

// reloadChanges compares the running configuration with the reloaded one.
// changes says in words what a reload applies (devices and points added,
// removed or changed; routes; users; ACL); restart names each key that
// differs but needs a restart, by its path in the file.
func reloadChanges(cur, next *Config) (changes, restart []string) {
	restart = append(restart, keyDiff("gateway", reflect.ValueOf(cur.Gateway), reflect.ValueOf(next.Gateway))...)
	restart = append(restart, keyDiff("broker.listeners", reflect.ValueOf(cur.Broker.Listeners), reflect.ValueOf(next.Broker.Listeners))...)
	restart = append(restart, keyDiff("broker.limits", reflect.ValueOf(cur.Broker.Limits), reflect.ValueOf(next.Broker.Limits))...)
	restart = append(restart, keyDiff("broker.sys_interval", reflect.ValueOf(cur.Broker.SysInterval), reflect.ValueOf(next.Broker.SysInterval))...)
	switch {
	case (cur.Bridge == nil) != (next.Bridge == nil):
		restart = append(restart, "bridge")
	case cur.Bridge != nil:
		a, b := *cur.Bridge, *next.Bridge
		if !reflect.DeepEqual(a.Forward, b.Forward) {
			changes = append(changes, "bridge.forward routes changed")
		}
		if !reflect.DeepEqual(a.Subscribe, b.Subscribe) {
			changes = append(changes, "bridge.subscribe routes changed")
		}
		a.Forward, a.Subscribe, b.Forward, b.Subscribe = nil, nil, nil, nil
		restart = append(restart, keyDiff("bridge", reflect.ValueOf(a), reflect.ValueOf(b))...)
	}
	changes = append(changes, deviceChanges(cur.Devices, next.Devices)...)

	ca, na := cur.Broker.Auth, next.Broker.Auth
	if ca.Anonymous != na.Anonymous {
		changes = append(changes, fmt.Sprintf("broker.auth.anonymous now %t", na.Anonymous))
	}
	users := func(a []broker.UserConfig) map[string]string {
		m := map[string]string{}
		for _, u := range a {
			m[u.Username] = u.PasswordHash
		}
		return m
	}
	added, removed, changed := diffNamed(users(ca.Users), users(na.Users))
	changes = appendNamed(changes, "users added", added)
	changes = appendNamed(changes, "users removed", removed)
	changes = appendNamed(changes, "passwords changed", changed)
	if !reflect.DeepEqual(ca.ACL, na.ACL) {
		changes = append(changes, fmt.Sprintf("broker.auth.acl changed (%d rules, were %d)", len(na.ACL), len(ca.ACL)))
	}
	return changes, restart
}

// deviceChanges lists devices added, removed and changed, and for a changed
// device its points added, removed and changed.
func deviceChanges(cur, next []devices.DeviceConfig) []string {
	byName := func(ds []devices.DeviceConfig) map[string]devices.DeviceConfig {
		m := map[string]devices.DeviceConfig{}
		for _, d := range ds {
			m[d.Name] = d
		}
		return m
	}
	c, n := byName(cur), byName(next)
	added, removed, changed := diffNamed(c, n)
	out := appendNamed(nil, "devices added", added)
	out = appendNamed(out, "devices removed", removed)
	for _, name := range changed {
		a, b := c[name], n[name]
		pts := func(ps []devices.PointConfig) map[string]devices.PointConfig {
			m := map[string]devices.PointConfig{}
			for _, p := range ps {
				m[p.Name] = p
			}
			return m
		}
		pa, pr, pc := diffNamed(pts(a.Points), pts(b.Points))
		var what []string
		what = appendNamed(what, "points added", pa)
		what = appendNamed(what, "points removed", pr)
		what = appendNamed(what, "points changed", pc)
		a.Points, b.Points = nil, nil
		if keys := keyDiff("", reflect.ValueOf(a), reflect.ValueOf(b)); len(keys) > 0 {
			what = append(what, strings.Join(keys, ", ")+" changed")
		}
		out = append(out, fmt.Sprintf("device %s changed (%s)", name, strings.Join(what, "; ")))
	}
	return out
}

func diffNamed[V any](cur, next map[string]V) (added, removed, changed []string) {
	for k, v := range next {
		old, ok := cur[k]
		switch {
		case !ok:
			added = append(added, k)
		case !reflect.DeepEqual(old, v):
			changed = append(changed, k)
		}
	}
	for k := range cur {
		if _, ok := next[k]; !ok {
			removed = append(removed, k)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	return added, removed, changed
}

func appendNamed(out []string, what string, names []string) []string {
	if len(names) == 0 {
		return out
	}
	return append(out, what+": "+strings.Join(names, ", "))
}

// keyDiff returns the paths of the keys whose values differ between a and
// b, descending into structs by their yaml tags; lists and maps are
// compared whole.
func keyDiff(path string, a, b reflect.Value) []string {
	if a.Kind() == reflect.Pointer && b.Kind() == reflect.Pointer && !a.IsNil() && !b.IsNil() {
		a, b = a.Elem(), b.Elem()
	}
	if a.Kind() != reflect.Struct {
		if reflect.DeepEqual(a.Interface(), b.Interface()) {
			return nil
		}
		return []string{path}
	}
	var out []string
	for i := 0; i < a.NumField(); i++ {
		f := a.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			name = strings.ToLower(f.Name)
		}
		if path != "" {
			name = path + "." + name
		}
		out = append(out, keyDiff(name, a.Field(i), b.Field(i))...)
	}
	return out
}
