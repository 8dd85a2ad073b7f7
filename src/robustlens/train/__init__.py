"""robustlens.train"""
