package httpapi

// FairQueued is how many requests wait for a run slot.
func (s *Server) FairQueued() int {
	if s.gate == nil {
		return -1
	}
	s.gate.mu.Lock()
	defer s.gate.mu.Unlock()
	n := 0
	for _, q := range s.gate.queues {
		n += len(q)
	}
	return n
}
