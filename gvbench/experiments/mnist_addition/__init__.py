"""MNIST addition (De Smet, Sansone & Zuidberg Dos Martires 2023, IndeCateR): a digit classifier
trained from the sum of N digits alone, its N outputs categorical variables of arity 10."""
