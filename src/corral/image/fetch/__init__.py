"""Getting images from elsewhere: pulls by URL or catalog alias, verified on the way in.

download.py and stream.py move bytes (HTTP Range resume, hashing and decompression in one
pass); checksums.py and catalog.py are pure parsing; pull.py ends in the image store.
gen-vm-image's architecture files, which also download, live in image/archfile/.
"""
