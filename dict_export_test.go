package mp

// DictBlocks returns the number of arena blocks d's map holds (its table
// and entries), for tests.
func DictBlocks[K comparable, V any](d *Dict[K, V]) int {
	d.lock()
	defer d.m.unlock()
	return len(d.s.Blocks())
}
