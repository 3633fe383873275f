"""klipjax: PPO-Clip and its per-sample KL forms, end to end in JAX."""

from klipjax import losses

__version__ = "0.1.0"
__all__ = ["__version__", "losses"]
