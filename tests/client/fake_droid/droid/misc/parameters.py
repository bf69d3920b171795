"""DROID's camera ids (serial numbers of the ZED cameras), as ``droid/misc/parameters.py`` names them."""

varied_camera_1_id = "24259877"
varied_camera_2_id = "24514023"
hand_camera_id = "13062452"
