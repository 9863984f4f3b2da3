"""Print the environment (versions, lsa._C and its CUDA kernels): ``python -m lsa.info``."""
from lsa.info import main

if __name__ == '__main__':
    main()
