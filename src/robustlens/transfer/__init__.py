"""robustlens.transfer"""
