"""Results reports (``ttg report``): run records, benchmark results and chaos journals in, Markdown, .docx and HTML out.

``inputs`` finds and classifies the JSON documents under a directory; ``model``
turns them into the report's tables and verdicts; ``plots`` draws the figures
(matplotlib); ``render`` writes Markdown and HTML through Jinja2 templates and
``docx`` the Word document through python-docx.
"""
