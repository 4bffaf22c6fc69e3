"""A faithful simulator of GMI's request-queue API; imports nothing from the gateway."""

from gateway.sim.app import SimConfig, create_sim_app

__all__ = ("SimConfig", "create_sim_app")
