"""robustlens.attacks"""
