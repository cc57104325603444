"""A door bell: the smallest useful driver family, written against edge's public interface."""
