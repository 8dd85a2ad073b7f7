"""robustlens.explain"""
