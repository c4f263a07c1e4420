"""The runtime: sources, the multicast runner, failover, key pools, the hub, replay."""

__all__: list[str] = []
