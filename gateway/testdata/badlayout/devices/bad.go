package devices

import _ "github.com/mochi-mqtt/server/v2"
