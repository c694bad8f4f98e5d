package modbus

import _ "github.com/fieldgate/fieldgate/devices"
