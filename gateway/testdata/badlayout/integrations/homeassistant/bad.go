package homeassistant

import (
	_ "github.com/fieldgate/fieldgate/bridge"
	_ "github.com/fieldgate/fieldgate/devices"
)
