"""Scoring embedders: retrieval metrics, calibration, paired statistics, reports, plots and the MTEB tasks."""
