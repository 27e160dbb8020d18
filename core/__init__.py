"""Settings: what every room of convlab needs."""
