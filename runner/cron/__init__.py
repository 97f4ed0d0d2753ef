"""Cron schedules: tick computation (`ticks`), firing (`fire`), the HA scheduler loop
(`scheduler`) and keeping a folder of workflow files applied (`folder`)."""
