"""cmkd: crossmodal knowledge distillation study."""
__version__ = "0.1.0"
