package gateway

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/fieldgate/fieldgate/devices"
)

// Reload re-reads the configuration file and applies what can change on a
// running gateway: device maps, users and ACLs, and the bridge's forward and
// subscribe routes. Local client connections, the upstream session and
// buffered data are kept. Changes to listeners, limits, the upstream
// connection, the buffer or the gateway section need a restart: they are
// logged and not applied. An invalid file is rejected as a whole and the
// running configuration is kept.
func (g *Gateway) Reload(path string) error {
	next, err := Load(path, g.drivers)
	if err != nil {
		return err
	}
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	g.mu.Lock()
	cur, b, br, ready := g.cfg, g.broker, g.bridge, g.ready
	g.mu.Unlock()
	if !ready {
		return errors.New("reload: the gateway is not running")
	}

	changes, restart := reloadChanges(cur, next)
	for _, w := range next.Warnings() {
		g.log.Warn("config: " + w.String())
	}

	// Build everything that can fail before changing anything.
	var set *devices.Set
	if !reflect.DeepEqual(pollerView(cur.Devices), pollerView(next.Devices)) {
		s, err := g.newDevices(next, b)
		if err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		set = s
	}
	applyHA, haRestart, err := g.prepareHA(next)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if err := b.SetAuth(next.Broker.Auth); err != nil {
		return fmt.Errorf("reload: broker.auth: %w", err)
	}
	applied := *cur
	applied.Broker.Auth = next.Broker.Auth
	if br != nil && next.Bridge != nil && cur.Bridge != nil &&
		(!reflect.DeepEqual(cur.Bridge.Forward, next.Bridge.Forward) || !reflect.DeepEqual(cur.Bridge.Subscribe, next.Bridge.Subscribe)) {
		if err := br.SetRoutes(next.Bridge.Forward, next.Bridge.Subscribe); err != nil {
			return fmt.Errorf("reload: bridge routes: %w", err)
		}
		bc := *cur.Bridge
		bc.Forward, bc.Subscribe = next.Bridge.Forward, next.Bridge.Subscribe
		applied.Bridge = &bc
	}
	applyHA()
	if haRestart {
		restart = append(restart, "integrations.homeassistant.enabled")
	} else {
		applied.Integrations = next.Integrations
	}
	applied.Devices = next.Devices // what the pollers ignore may differ even without a new set
	if set != nil {
		<-g.devRun.stop()
		g.devRun.start(set)
		g.mu.Lock()
		g.devs = set
		g.mu.Unlock()
	}
	g.mu.Lock()
	g.cfg = &applied
	g.mu.Unlock()
	if len(changes) == 0 {
		changes = []string{"nothing that a reload applies"}
	}
	if len(restart) > 0 {
		g.log.Warn("configuration reloaded; these keys need a restart and were not applied: "+strings.Join(restart, ", "),
			"changes", strings.Join(changes, "; "))
	} else {
		g.log.Info("configuration reloaded", "changes", strings.Join(changes, "; "))
	}
	return nil
}
