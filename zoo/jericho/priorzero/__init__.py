"""PriorZero for Jericho text adventures: the env, our default game, configs and the main entry."""
