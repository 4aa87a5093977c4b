"""Shared pytest setup: quiet TensorFlow logs and seed every test deterministically."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
