

def test_file_mode_follows_the_umask():
    import os

    from organfm.data.runfiles import file_mode

    old = os.umask(0o027)
    try:
        assert file_mode() == 0o640
    finally:
        os.umask(old)
