"""Live delivery of snapshots and events: a leading- and trailing-edge `Throttle` on a background
thread, `Subscription`s with their own snapshot options, and `LiveDelivery` tying them together."""
