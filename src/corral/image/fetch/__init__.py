"""Getting images from elsewhere: pulls by URL or catalog alias, and gen-vm-image builds.

download.py and stream.py move bytes (HTTP Range resume, hashing and decompression in one
pass); checksums.py and catalog.py are pure parsing; pull.py and archbuild.py are the recipes
that end in the image store.
"""
