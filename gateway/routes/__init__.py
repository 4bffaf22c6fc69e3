"""Thin HTTP handlers: parse, authenticate, call a service, answer."""

__all__ = ()
