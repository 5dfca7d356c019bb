package mp

// PoolWorkersStarted returns how many worker processes p has started, for
// tests that check a pool does not start more than it must.
func PoolWorkersStarted(p *Pool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seq
}
