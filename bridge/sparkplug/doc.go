// Package sparkplug is the Sparkplug B (Eclipse Sparkplug v3.0) encoding of
// fieldgate's upstream link, without any MQTT: the protobuf payload
// (generated from sparkplug_b.proto), topic names, the datatype of a device
// point, the payloads of the node and device lifecycle (NBIRTH, NDEATH,
// DBIRTH, DDEATH, NDATA, DDATA) with their aliases and sequence numbers, the
// persisted birth/death sequence number (bdSeq), the decoding of host
// commands (NCMD, DCMD), the primary host's STATE messages and the
// `bridge.sparkplug` configuration keys.
//
// The bridge owns the connection: it takes a bdSeq from BdSeqStore before
// each CONNECT, installs Node.Connect's NDEATH as the will, publishes the
// births, then builds every data message with Node at the moment it sends it
// (that is when the message's seq is assigned), and hands the writes of
// Node.DecodeCommand to the write-back path. With a primary host, it feeds
// the STATE messages to a HostTracker and publishes only while it says
// online.
//
// The package imports nothing from the rest of the module.
package sparkplug
