"""placeholder: being built"""
