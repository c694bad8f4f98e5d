package devices

// OwnedTopics returns the topics the set's devices publish on: each point's
// topic, the write result topic (<point topic>/set/result) of each
// writable point, and each device's availability topic. They belong to the
// gateway: the broker keeps network clients from publishing there (a
// device's /set topic is not among them). Safe for concurrent use.
func (s *Set) OwnedTopics() []string {
	var topics []string
	for _, r := range s.runners {
		topics = append(topics, r.availTopic)
		for _, p := range r.points {
			topics = append(topics, p.topic)
			if p.p.Config.Writable {
				topics = append(topics, p.topic+"/set/result")
			}
		}
	}
	return topics
}
