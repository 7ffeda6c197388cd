//go:build tools

// Package tools pins go2rtc's main package so that `go mod vendor` fetches it; scripts/bench-setup
// then builds github.com/AlexxIT/go2rtc from the vendor tree.
package tools

import _ "github.com/AlexxIT/go2rtc"
