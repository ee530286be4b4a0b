"""The shared, sans-IO core of the chat lab kit.

Every module here turns bytes into events and events into bytes; none of them
touches a socket, a selector or a window (``net.py`` and ``ui.py`` aside), so
each rule can be tested without a network.
"""
