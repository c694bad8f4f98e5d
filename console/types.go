package console

import "time"

// Status is the Overview: what an integrator checks first.
type Status struct {
	Gateway     string    `json:"gateway"`
	Version     string    `json:"version"`
	Started     time.Time `json:"started"`
	UptimeSec   float64   `json:"uptime_seconds"`
	ClockSynced bool      `json:"clock_synced"`
	// DevicesTotal and DevicesOnline count the configured devices.
	DevicesTotal  int `json:"devices_total"`
	DevicesOnline int `json:"devices_online"`

	Broker   BrokerStatus    `json:"broker"`
	Upstream *UpstreamStatus `json:"upstream"` // nil without a bridge
	Backlog  *BacklogStatus  `json:"backlog"`  // nil without a bridge
	// Drops counts messages dropped, by reason (only reasons that happened
	// are listed).
	Drops map[string]uint64 `json:"drops"`
	Disk  DiskStatus        `json:"disk"`
}

// BrokerStatus summarises the embedded broker.
type BrokerStatus struct {
	Clients          int64 `json:"clients"`
	Subscriptions    int64 `json:"subscriptions"`
	Retained         int64 `json:"retained"`
	Inflight         int64 `json:"inflight"`
	MessagesReceived int64 `json:"messages_received"`
	MessagesSent     int64 `json:"messages_sent"`
}

// UpstreamStatus is the bridge's link to the upstream broker.
type UpstreamStatus struct {
	URL       string `json:"url"` // credentials removed
	State     string `json:"state"`
	Connected bool   `json:"connected"`
	// LastError is why the link last failed or was lost, LastErrorTime when.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	Reconnects    uint64    `json:"reconnects"`
	Forwarded     uint64    `json:"forwarded"`
}

// BacklogStatus is the store-and-forward buffer.
type BacklogStatus struct {
	Messages     uint64  `json:"messages"`
	Bytes        uint64  `json:"bytes"`
	MaxBytes     uint64  `json:"max_bytes"`
	OldestAgeSec float64 `json:"oldest_age_seconds"`
	// DrainRate is messages forwarded per second over the last seconds,
	// IngestRate messages entering the buffer per second.
	DrainRate  float64 `json:"drain_rate"`
	IngestRate float64 `json:"ingest_rate"`
	// DrainETASec estimates the seconds until the backlog is empty at the
	// current rates (drain minus ingest); -1 when it is not shrinking.
	DrainETASec float64 `json:"drain_eta_seconds"`
}

// DiskStatus is the file system holding the data directory.
type DiskStatus struct {
	DataDir    string `json:"data_dir"`
	FreeBytes  uint64 `json:"free_bytes"`
	TotalBytes uint64 `json:"total_bytes"`
}

// Device is one configured device with its counters.
type Device struct {
	Name          string    `json:"name"`
	Driver        string    `json:"driver"`
	Online        bool      `json:"online"`
	Polls         uint64    `json:"polls"`
	PollErrors    uint64    `json:"poll_errors"`
	ReadErrors    uint64    `json:"read_errors"`
	Writes        uint64    `json:"writes"`
	WriteErrors   uint64    `json:"write_errors"`
	LastSample    time.Time `json:"last_sample,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	Points        []Point   `json:"points"`
}

// Point is a point's configuration, as the console shows it.
type Point struct {
	Name     string   `json:"name"`
	Topic    string   `json:"topic"`
	Unit     string   `json:"unit,omitempty"`
	Writable bool     `json:"writable"`
	Min      *float64 `json:"min,omitempty"`
	Max      *float64 `json:"max,omitempty"`
	// StaleAfter is how old a value may get before it is marked stale
	// (0: never by age — deadband points without a heartbeat are only
	// republished when they change).
	StaleAfter time.Duration `json:"-"`
}

// Client is one connected MQTT client of the embedded broker.
type Client struct {
	ID            string   `json:"client_id"`
	Username      string   `json:"username,omitempty"`
	Remote        string   `json:"address"`
	Protocol      string   `json:"protocol"`
	Subscriptions []string `json:"subscriptions"`
	Inflight      int      `json:"inflight"`
	Queued        int      `json:"queued"`
}

// RunningConfig is the configuration in effect, with every secret
// replaced by "[redacted]", and the outcome of the last reload.
type RunningConfig struct {
	YAML       string        `json:"yaml"`
	LastReload *ReloadResult `json:"last_reload"` // nil: never reloaded
}

// ReloadResult is the outcome of one reload.
type ReloadResult struct {
	Time  time.Time `json:"time"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
	// NotApplied lists the sections that changed but need a restart.
	NotApplied []string `json:"not_applied,omitempty"`
}
