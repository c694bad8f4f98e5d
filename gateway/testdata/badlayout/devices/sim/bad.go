package sim

import _ "github.com/fieldgate/fieldgate/devices/modbus"
