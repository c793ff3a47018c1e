"""The daemon around the cycles: the polling loop, cycle reports, client wiring, bounded concurrency."""
