package homeassistant

import "strings"

// unitClass is what a unit says about a sensor: its Home Assistant device
// class and state class.
type unitClass struct {
	deviceClass string
	stateClass  string
}

// unitAliases maps spellings seen in device maps to the unit symbol Home
// Assistant expects. Units are case-sensitive (mW and MW differ), so only
// these exact spellings are rewritten.
var unitAliases = map[string]string{
	"degC": "°C", "℃": "°C", "degF": "°F", "℉": "°F",
	"m3": "m³", "m^3": "m³", "ft3": "ft³", "m3/h": "m³/h", "m^3/h": "m³/h", "m3/s": "m³/s",
	"l": "L", "l/min": "L/min", "l/h": "L/h", "l/s": "L/s",
	"VAr": "var", "kVAr": "kvar", "VArh": "varh", "kVArh": "kvarh",
	"uV": "µV", "ug/m3": "µg/m³", "µg/m3": "µg/m³",
}

// byUnit gives the device class and state class of the units whose quantity
// is unambiguous. The units are those Home Assistant accepts for the class
// (its sensor documentation's device class table), so the derived entity
// passes HA's unit check and gets long-term statistics.
var byUnit = func() map[string]unitClass {
	m := map[string]unitClass{}
	for _, g := range []struct {
		dc, sc string
		units  []string
	}{
		{"temperature", "measurement", []string{"°C", "°F", "K"}},
		{"power", "measurement", []string{"mW", "W", "kW", "MW", "GW", "TW", "BTU/h"}},
		{"energy", "total_increasing", []string{"mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "J", "kJ", "MJ", "GJ", "cal", "kcal", "Mcal", "Gcal"}},
		{"apparent_power", "measurement", []string{"VA", "kVA"}},
		{"reactive_power", "measurement", []string{"var", "kvar"}},
		{"reactive_energy", "total_increasing", []string{"varh", "kvarh"}},
		{"voltage", "measurement", []string{"µV", "mV", "V", "kV", "MV"}},
		{"current", "measurement", []string{"mA", "A"}},
		{"frequency", "measurement", []string{"Hz", "kHz", "MHz", "GHz"}},
		{"pressure", "measurement", []string{"Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi"}},
		{"volume_flow_rate", "measurement", []string{"m³/h", "m³/s", "ft³/min", "L/h", "L/min", "L/s", "gal/min", "mL/s"}},
		{"illuminance", "measurement", []string{"lx"}},
		{"irradiance", "measurement", []string{"W/m²", "BTU/(h⋅ft²)"}},
		{"signal_strength", "measurement", []string{"dB", "dBm"}},
		{"speed", "measurement", []string{"m/s", "km/h", "mph", "ft/s", "kn"}},
		{"distance", "measurement", []string{"mm", "cm", "m", "km", "in", "ft", "yd", "mi"}},
		{"weight", "measurement", []string{"g", "kg", "mg", "µg", "oz", "lb", "st"}},
		{"duration", "measurement", []string{"ms", "s", "min", "h", "d"}},
		{"precipitation_intensity", "measurement", []string{"mm/h", "in/h", "mm/d", "in/d"}},
		{"data_rate", "measurement", []string{"bit/s", "kbit/s", "Mbit/s", "Gbit/s", "B/s", "kB/s", "MB/s", "GB/s"}},
		{"data_size", "measurement", []string{"bit", "kbit", "Mbit", "Gbit", "B", "kB", "MB", "GB", "TB"}},
	} {
		for _, u := range g.units {
			m[u] = unitClass{g.dc, g.sc}
		}
	}
	return m
}()

// volumeUnits are the units of the volume-like classes: gas accepts m³,
// ft³ and CCF; water and volume accept litres and gallons too.
var (
	gasUnits   = map[string]bool{"m³": true, "ft³": true, "CCF": true}
	waterUnits = map[string]bool{"m³": true, "ft³": true, "CCF": true, "L": true, "gal": true}
	volUnits   = map[string]bool{"m³": true, "ft³": true, "CCF": true, "L": true, "mL": true, "gal": true, "fl. oz.": true}
)

// normUnit returns the unit as Home Assistant spells it.
func normUnit(u string) string {
	if rhUnits[u] {
		return "%"
	}
	if a, ok := unitAliases[u]; ok {
		return a
	}
	return u
}

// rhUnits spell relative humidity in the unit itself; Home Assistant's
// humidity unit is "%".
var rhUnits = map[string]bool{"%RH": true, "% RH": true, "%rh": true, "RH%": true, "%r.h.": true}

// deriveClass returns the device class and state class of a numeric sensor
// from its (normalised) unit and, where the unit alone is ambiguous (%,
// m³, µg/m³), the words of its name ("boiler_humidity" → boiler, humidity).
// An unknown unit gives no device class and state class measurement, so HA
// still keeps statistics.
func deriveClass(unit, name string) unitClass {
	words := strings.FieldsFunc(strings.ToLower(name), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	})
	// has reports whether a word of the name starts with one of prefixes.
	has := func(prefixes ...string) bool {
		for _, w := range words {
			for _, p := range prefixes {
				if strings.HasPrefix(w, p) {
					return true
				}
			}
		}
		return false
	}
	if c, ok := byUnit[unit]; ok {
		return c
	}
	switch {
	case unit == "%":
		switch {
		case has("hum", "rh"):
			return unitClass{"humidity", "measurement"}
		case has("moist"):
			return unitClass{"moisture", "measurement"}
		case has("batt", "soc"):
			return unitClass{"battery", "measurement"}
		case has("pf", "powerfactor", "cosphi") || strings.Contains(strings.Join(words, "_"), "power_factor") || strings.Contains(strings.Join(words, "_"), "cos_phi"):
			return unitClass{"power_factor", "measurement"}
		}
		return unitClass{"", "measurement"}
	case unit == "µg/m³":
		// Particulate matter: the name says which size.
		switch {
		case has("pm25", "pm2"):
			return unitClass{"pm25", "measurement"}
		case has("pm10"):
			return unitClass{"pm10", "measurement"}
		case has("pm1"):
			return unitClass{"pm1", "measurement"}
		}
		return unitClass{"", "measurement"}
	case gasUnits[unit] && has("gas"):
		return unitClass{"gas", "total_increasing"}
	case waterUnits[unit] && has("water"):
		return unitClass{"water", "total_increasing"}
	case volUnits[unit]:
		// A volume in a meter's unit is most often a meter reading;
		// a tank level overrides with device_class volume_storage.
		return unitClass{"volume", "total_increasing"}
	}
	return unitClass{"", "measurement"}
}

func set(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

// Device classes Home Assistant documents per entity type.
var (
	sensorClasses = set("absolute_humidity", "apparent_power", "aqi", "area", "atmospheric_pressure", "battery",
		"blood_glucose_concentration", "carbon_dioxide", "carbon_monoxide", "conductivity", "current",
		"data_rate", "data_size", "date", "distance", "duration", "energy", "energy_distance",
		"energy_storage", "enum", "frequency", "gas", "humidity", "illuminance", "irradiance", "moisture",
		"monetary", "nitrogen_dioxide", "nitrogen_monoxide", "nitrous_oxide", "ozone", "ph", "pm1", "pm10",
		"pm25", "power", "power_factor", "precipitation", "precipitation_intensity", "pressure",
		"reactive_energy", "reactive_power", "signal_strength", "sound_pressure", "speed",
		"sulphur_dioxide", "temperature", "timestamp", "volatile_organic_compounds",
		"volatile_organic_compounds_parts", "voltage", "volume", "volume_flow_rate", "volume_storage",
		"water", "weight", "wind_direction", "wind_speed")
	binaryClasses = set("battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
		"garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
		"opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
		"tamper", "update", "vibration", "window")
	switchClasses = set("outlet", "switch")
	stateClasses  = set("measurement", "total", "total_increasing")
	// meterClasses only make sense as totals: HA rejects state_class
	// measurement for them, and the Energy dashboard lists only totals.
	meterClasses = set("energy", "gas", "water", "reactive_energy", "energy_storage")
)

// numberClasses are the sensor classes minus those that are not numbers.
var numberClasses = func() map[string]bool {
	m := map[string]bool{}
	for c := range sensorClasses {
		switch c {
		case "date", "enum", "timestamp", "energy_storage":
		default:
			m[c] = true
		}
	}
	return m
}()
