"""sam2_ros: the ROS 2 node of sam2-rt. The generated interfaces live in sam2_ros.msg / sam2_ros.srv."""
# Our sources and the rosidl-generated modules may sit in two folders named sam2_ros (a source checkout
# on sys.path beside the install): let the package span both, whichever is imported first.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
