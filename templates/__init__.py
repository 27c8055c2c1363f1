"""Jinja2 templates for the Nomad job (shipped in the wheel as `nomad_triton.templates`)."""
