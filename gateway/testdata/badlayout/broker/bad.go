package broker

import _ "github.com/fieldgate/fieldgate/bridge"
