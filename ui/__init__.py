"""Streamlit helpers shared by the pages (the engine in explorer/ never imports streamlit)."""
