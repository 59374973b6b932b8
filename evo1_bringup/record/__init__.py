"""`evo1 record`: demonstrations on any arm (episode_bag -> recorder -> session -> run; keys)."""
