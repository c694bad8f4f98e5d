package sparkplug

// sparkplug_b.pb.go is generated from sparkplug_b.proto by Debian's protoc
// (apt-get install protobuf-compiler; 3.21.12 in bookworm) and protoc-gen-go
// from google.golang.org/protobuf v1.36.12, the version go.mod requires:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go generate ./bridge/sparkplug
//
// TestGeneratedCodeIsCurrent regenerates it into a temporary directory and
// fails when the committed file differs.

//go:generate protoc --go_out=. --go_opt=paths=source_relative sparkplug_b.proto
