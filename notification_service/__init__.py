"""The reference backend: notifications delivered now if the user is online, from an inbox if not.

Built in issue #6; the gateway side it relies on (client.connect events, user. delivery with receipts)
is in place.
"""
