"""The web UI's shared parts: layout, language, sign-in session, navigation.

Each module keeps its own pages (``pages.py``) and templates (``<module>/templates``)
and renders them with :func:`kizuna.web.templating.render`, so every page shares one
look, one sign-in and one language switch.
"""
