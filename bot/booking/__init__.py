"""Booking a consultation: the closure calendar, free slots, contact details, the .ics file
(pure), and the desk that books, cancels and tells agents (`bot.booking.desk`)."""
