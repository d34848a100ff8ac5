"""The bottom layer of modfuse: contracts every other package builds on (configs, save/load)."""
