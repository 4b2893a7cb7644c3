"""LINE: webhook parsing, rendering, the Messaging API client, delivery and the adapter."""
