"""Structural primitives: masks, width shrink, depth removal, structure records."""
