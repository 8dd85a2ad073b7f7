"""robustlens.probes"""
