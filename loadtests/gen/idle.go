package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// idle opens spec.Count SSE streams or Bayeux sessions (which keep polling), prints
// {"open": count} when all are, holds them until stdin ends (the caller reads the server's
// memory meanwhile), then closes them.
func idle(spec *Spec, stdin *json.Decoder) (map[string]any, error) {
	var group subscribers
	err := group.open(spec, spec.Transport == "bayeux", spec.Count, func(int, []byte) {})
	if err != nil {
		return nil, err
	}
	fmt.Printf("{\"open\": %d}\n", spec.Count)
	_, _ = io.Copy(io.Discard, io.MultiReader(stdin.Buffered(), os.Stdin))
	failures := group.failed()
	group.close()
	return map[string]any{"opened": spec.Count, "subscriber_failures": failures}, nil
}
