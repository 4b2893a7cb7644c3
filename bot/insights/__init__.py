"""Funnel analytics and A/B comparisons for /console/insights: the report built from the facts
and the flow's `insights:` section, its statistics, tables (CSV) and SVG charts."""
