// The test bed node's sandbox ("pause") image: built by scripts/build-images, no registry.
module camfleet.io/tools/pause

go 1.25.0
