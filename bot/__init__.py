"""yarigai: a LINE and Slack career chatbot for Japanese back-office workers."""
