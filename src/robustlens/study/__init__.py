"""robustlens.study"""
