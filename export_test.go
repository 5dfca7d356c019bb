package mp

// CheckArena verifies the allocator's invariants of the tree's arena, for
// tests: nil, or what is wrong.
func CheckArena() error {
	a, err := treeArena()
	if err != nil {
		return err
	}
	return a.Check()
}
